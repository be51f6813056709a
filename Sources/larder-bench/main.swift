// Entry point of larder-bench: wiring only (see BenchCommand.swift).
BenchCommand.main()
