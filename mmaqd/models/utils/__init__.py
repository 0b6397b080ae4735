from .quant_policy import SCOPES, apply_quant_cfg, format_quant_table

__all__ = ['SCOPES', 'apply_quant_cfg', 'format_quant_table']
