// Entry point: wiring only (see LarderCommand.swift).
LarderCommand.main(Array(CommandLine.arguments.dropFirst()))
