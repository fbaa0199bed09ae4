//! qtrace's root integration suites live in `tests/`, one file per suite;
//! see `test/README.md` for how they are run and what they assert.
