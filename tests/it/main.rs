//! Integration tests: the real binary against real upstreams.
