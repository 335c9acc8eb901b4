"""`harness view`: a local, read-only web viewer over the store (see `app`)."""
