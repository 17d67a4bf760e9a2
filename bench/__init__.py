"""pacs-edge benchmarks: opt-in (`make bench`), never part of `make test`."""
