"""Built-in offline suite generators: ``<generator>.build(spec, out_dir, size, seed, advance) -> Manifest``."""
