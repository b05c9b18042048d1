"""Word alignment, torch-free: links from attention matrices (:mod:`.links`), the alignment error
rate (:mod:`.aer`), symmetrisation (:mod:`.symmetrize`), the eflomal baseline (:mod:`.eflomal`) and
line reading (:mod:`.io`).  Nothing here imports torch or fairseq: ``fairseq-rela-aer`` and
``fairseq-rela-symmetrize`` start in a fraction of a second."""
