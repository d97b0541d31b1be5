"""What the stages share: config loading, market data, artifact I/O, panels, the demo universe."""
