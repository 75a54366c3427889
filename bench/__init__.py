"""bench: a SUPERB-style harness comparing prompt tuning of frozen spoken language models
(GSLM / pGSLM) with s3prl-style downstream baselines, per task and per trainable parameter."""

__version__ = "0.1.0"
