"""Operations: fleet registry, operator API, command line, and the composition of all roles."""
