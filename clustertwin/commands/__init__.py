"""Click commands, one module per area of the product (see ``clustertwin.cli``)."""
