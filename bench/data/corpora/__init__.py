"""Adapters for real corpora in their official layouts: ``<adapter>.Adapter`` (see ``base.CorpusAdapter``)."""
