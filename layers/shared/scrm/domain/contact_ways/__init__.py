"""渠道活码 and campaigns."""
