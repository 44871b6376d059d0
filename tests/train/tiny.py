"""The tiny RS3L pre-training config several trainer tests build on."""

#: RS3L on a tiny ParT (16 wide, one block, 32 particles); tests add [run] and the rest.
TINY_PART = """
[encoder]
name = "part"
embed_dims = [16, 16]
pair_embed_dims = [8, 8]
num_heads = 2
num_layers = 1
num_cls_layers = 1

[method]
name = "rs3l"

[data]
max_particles = 32
batch_size = 64
"""

#: A tiny transformer encoder (16 wide, one block): tests add the method, data and run.
TINY_TRANSFORMER = """
[encoder]
name = "transformer"
embed_dims = [16, 16]
num_heads = 2
num_layers = 1
num_cls_layers = 1
"""
