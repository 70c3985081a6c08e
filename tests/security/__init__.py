"""Attack tests: each reproduces an attack on a served or fed judge and checks it is refused or harmless."""
