"""ChainCore: a small, readable, HTTP-native blockchain full node built on Twisted."""

__version__ = "0.2.0"
