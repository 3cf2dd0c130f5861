"""The file formats hubckpt publishes, each defined (names, version, parse, serialise) in one module.

- `formats.manifest`: `checkpoint.json`, what makes a revision self-describing (step, metrics, files + sha256).
- `formats.index`: `revisions.json` on `main`, the index of every revision, with its verbs
  (`latest`, `best_info`, `at_step`, ...).
- `formats.numbers`: how both write NaN / ±inf (as strings, so every JSON parser accepts them).

Depends on nothing else in hubckpt but `errors` and `names`: the hub reader and writer, the converter,
the publisher and the consumer side all build on it.
"""
