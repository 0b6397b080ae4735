"""Generated parts of markdown files, kept between two marker comments."""


def replace_marked_block(text: str, block: str, begin: str, end: str) -> str:
    """``text`` with the part between the markers ``begin`` and ``end`` replaced.

    Args:
        text (str): The markdown text (e.g. README.md).
        block (str): The new content; a newline is put before it and kept after it.
        begin (str): The opening marker, e.g. ``<!-- study:begin -->``.
        end (str): The closing marker.

    Returns:
        str: The new text; everything outside the markers is unchanged.

    Raises:
        ValueError: If a marker is missing or ``end`` comes before ``begin``.
    """
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f'the text has no {begin} ... {end} block')
    if not block.endswith('\n'):
        block += '\n'
    return text[:start + len(begin)] + '\n' + block + text[stop:]
