"""Bits and quantizer type of every ``QConv`` in a model, chosen by module name."""
import re
from typing import Dict, List, Optional, Sequence

from torch import nn

from mmaqd.quant import QConv, check_bits, get_quantizer_type

SCOPES = {
    'backbone': ('backbone.', ),
    'backbone+neck': ('backbone.', 'neck.'),
    'all': ('', ),
}
_CFG_KEYS = {'w_bits', 'a_bits', 'quantizer', 'scope', 'overrides'}
_OVERRIDE_KEYS = {'pattern', 'w_bits', 'a_bits', 'quantizer'}


def _check_keys(given: Dict, allowed: set, where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f'{where}: unknown key(s) {unknown}; expected some of '
                         f'{sorted(allowed)}')


def apply_quant_cfg(model: nn.Module, quant_cfg: Optional[dict]) -> List[dict]:
    """Set the bits and quantizer type of every :class:`QConv` in ``model``.

    ``quant_cfg`` keys: ``w_bits`` and ``a_bits`` (defaults for every QConv, 32 =
    not quantized), ``quantizer`` (type name), ``scope`` (``'backbone'``,
    ``'backbone+neck'`` or ``'all'``; QConvs outside it stay at 32 bits) and
    ``overrides``: a list of dicts with a ``pattern`` (a regular expression matched
    with ``re.search`` against the module name, e.g. ``r'^backbone\\.conv1$'``) and
    any of ``w_bits``, ``a_bits``, ``quantizer``. Later overrides win. Overrides
    apply inside the scope only.

    Args:
        model (nn.Module): The model; its QConvs are changed in place.
        quant_cfg (dict, optional): The settings; None leaves every QConv at 32 bits.

    Returns:
        list[dict]: One row per QConv: ``name``, ``w_bits``, ``a_bits`` (None for an
        integer input), ``quantizer``.

    Raises:
        ValueError: Unknown keys or scope, invalid bits or quantizer type, an
            override pattern that matches no QConv, or one that sets ``a_bits`` but
            matches only QConvs without an input quantizer (named in the message).
    """
    cfg = dict(quant_cfg or {})
    _check_keys(cfg, _CFG_KEYS, 'quant_cfg')
    scope = cfg.get('scope', 'all')
    if scope not in SCOPES:
        raise ValueError(f'quant_cfg: scope={scope!r} is invalid; expected one of '
                         f'{sorted(SCOPES)}')
    default = dict(
        w_bits=check_bits(cfg.get('w_bits', 32), 'quant_cfg w_bits'),
        a_bits=check_bits(cfg.get('a_bits', 32), 'quant_cfg a_bits'),
        quantizer=cfg.get('quantizer', 'LSQ'))
    get_quantizer_type(default['quantizer'], 'quant_cfg')
    overrides = _compile_overrides(cfg.get('overrides', []))

    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, QConv)]
    in_scope = {n for n, _ in convs if n.startswith(SCOPES[scope])}
    matched = [False] * len(overrides)
    # per override with a_bits: whether it reached a conv that has an input quantizer
    sets_inputs = [False] * len(overrides)
    rows = []
    for name, conv in convs:
        setting = dict(w_bits=32, a_bits=32, quantizer=default['quantizer'])
        if name in in_scope:
            setting.update(default)
            for k, (regex, values) in enumerate(overrides):
                if regex.search(name):
                    matched[k] = True
                    sets_inputs[k] |= conv.input_quantizer is not None
                    setting.update(values)
        conv.set_quantizer_type(setting['quantizer'])
        conv.set_bits(w_bits=setting['w_bits'], a_bits=setting['a_bits'])
        rows.append(dict(name=name, w_bits=conv.w_bits, a_bits=conv.a_bits,
                         quantizer=conv.quantizer))
    unmatched = [overrides[k][0].pattern for k, hit in enumerate(matched) if not hit]
    if unmatched:
        raise ValueError(f'quant_cfg: override pattern(s) {unmatched} match no QConv in '
                         f'scope {scope!r}')
    ignored = [overrides[k][0].pattern for k, hit in enumerate(sets_inputs)
               if 'a_bits' in overrides[k][1] and not hit]
    if ignored:
        raise ValueError(f'quant_cfg: override pattern(s) {ignored} set a_bits, but every QConv '
                         f'they match reads the integer image (input_quant=None, e.g. '
                         f'backbone.conv1) and has no input quantizer; drop a_bits there')
    return rows


def _compile_overrides(overrides: Sequence[dict]) -> list:
    compiled = []
    for k, override in enumerate(overrides):
        where = f'quant_cfg overrides[{k}]'
        _check_keys(override, _OVERRIDE_KEYS, where)
        if 'pattern' not in override:
            raise ValueError(f'{where}: needs a "pattern"')
        try:
            regex = re.compile(override['pattern'])
        except re.error as err:
            raise ValueError(f'{where}: pattern {override["pattern"]!r} is not a valid '
                             f'regular expression: {err}') from err
        values = {key: override[key] for key in ('w_bits', 'a_bits', 'quantizer')
                  if key in override}
        for key in ('w_bits', 'a_bits'):
            if key in values:
                check_bits(values[key], f'{where} ({override["pattern"]!r}) {key}')
        if 'quantizer' in values:
            get_quantizer_type(values['quantizer'], where)
        compiled.append((regex, values))
    return compiled


def format_quant_table(rows: List[dict]) -> str:
    """The rows of :func:`apply_quant_cfg` as a text table for the log."""
    width = max([len(r['name']) for r in rows] + [len('layer')])
    lines = [f'{"layer":<{width}}  w_bits  a_bits  quantizer']
    for r in rows:
        a_bits = 'int' if r['a_bits'] is None else str(r['a_bits'])
        lines.append(f'{r["name"]:<{width}}  {r["w_bits"]:>6}  {a_bits:>6}  {r["quantizer"]}')
    return '\n'.join(lines)
