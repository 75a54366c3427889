"""Tasks: the registry of declarative task files (``registry``), their metrics (``metrics``) and the text
formats of labels and generation targets (``text``)."""
