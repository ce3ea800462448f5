"""The channel-padding multiple and the cached graph's layout name, without importing torch
(`channel_pad` holds the padding itself)."""

# 16 is a multiple of both AVX2's 8 and AVX-512's 16 channel block; padding to 8 ran equally
# fast on this AVX2 machine.
CHANNEL_MULTIPLE = 16
LAYOUT = f"pad{CHANNEL_MULTIPLE}"  # in the cached graph's name: a new layout re-exports
