"""Task data: manifests (one line per utterance) and the sources that produce them."""
