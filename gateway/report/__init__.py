"""`gateway report`: the shadow report, the cutover gate, and their renderers."""
