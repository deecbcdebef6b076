"""Storage backends: one module per backend (``sqlite`` is the embedded default).

Storage imports no protocol code.  What every backend shares is kept pure and
backend-free so a new backend reuses it: the sample chunk codec and the
last-write-wins merge in `tsnet.storage.chunks`, and the export lines of DESIGN §7
in `tsnet.export`.
"""

__all__: list[str] = []
