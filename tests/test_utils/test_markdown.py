"""replace_marked_block: the part between the markers, and nothing else, is replaced."""
import pytest

from mmaqd.utils import replace_marked_block

BEGIN, END = '<!-- x:begin -->', '<!-- x:end -->'


def test_only_the_marked_part_changes():
    text = f'intro\n{BEGIN}\nold\nlines\n{END}\noutro\n'
    assert replace_marked_block(text, 'new', BEGIN, END) == f'intro\n{BEGIN}\nnew\n{END}\noutro\n'
    # a block that ends with a newline gets no second one
    assert replace_marked_block(text, 'new\n', BEGIN, END) == \
        f'intro\n{BEGIN}\nnew\n{END}\noutro\n'


@pytest.mark.parametrize('text', ['no markers', f'{END}\n{BEGIN}\n', f'{BEGIN} only'])
def test_missing_or_reversed_markers_are_named(text):
    with pytest.raises(ValueError, match='the text has no <!-- x:begin --> ... <!-- x:end --> '):
        replace_marked_block(text, 'new', BEGIN, END)
