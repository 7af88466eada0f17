"""One ComponentResource per concern; each takes typed args and parents its children."""
