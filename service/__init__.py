"""The HTTP service around aegrade: no clinical logic lives here."""
