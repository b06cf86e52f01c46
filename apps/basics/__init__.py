"""The basics of the lecture notes as runnable experiments (see docs/basics.md)."""
