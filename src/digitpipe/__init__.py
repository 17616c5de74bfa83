"""digitpipe: a declarative pipeline from handwritten digits to an explained classifier."""

__version__ = "0.1.0"
