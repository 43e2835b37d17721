"""The product's code, one module per job (docs/engineering.md, "The shape of the code"); `common.py` (beside the
notebooks) re-exports the public names."""
