"""The edgert command line (installed as ``edgert.cli``)."""
