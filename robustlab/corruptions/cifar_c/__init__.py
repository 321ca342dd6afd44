"""The ``cifar-c`` protocol: ``make_cifar_c.py``'s constants (:mod:`.constants`), a fast batched
torch backend (:mod:`.fast`, :mod:`.fast_spatial`) and a per-image NumPy reference that follows the
script step by step (:mod:`.reference`)."""
