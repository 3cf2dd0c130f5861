"""hubckpt: publish every training checkpoint as a documented, loadable Hugging Face Hub revision.

`import hubckpt` stays light: the public names, listed once in `__init__.pyi`, load on first use
(the server, torch and transformers only when something needs them).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
