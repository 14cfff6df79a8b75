"""The pure core: records and maths with no I/O and no heavy dependencies beyond numpy."""
