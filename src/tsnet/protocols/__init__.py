"""Wire protocol families: each subpackage turns one family's bytes into tsnet items."""
