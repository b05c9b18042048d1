"""fairseq-rela: ReLA, softmax, sparsemax and 1.5-entmax attention for fairseq, with norm-based
attention analysis and word alignment.

Registration: load the plugin with ``--user-dir`` (the repository's ``fairseq_rela/`` or the installed
package's directory), or ``import fairseq_rela.models`` in Python: :mod:`fairseq_rela.models` and
:mod:`fairseq_rela.tasks` register the model and the tasks (and allow-list fairseq checkpoints for
``torch.load``).  This file registers them too when fairseq is already loaded (fairseq's ``--user-dir``
loader, scripts that import fairseq first), and otherwise imports nothing: the torch-free tools
(:mod:`fairseq_rela.alignment`, ``fairseq-rela-aer``, ``fairseq-rela-symmetrize``) never load torch or
fairseq.  (fairseq's loader skips a package that is already imported, so a script that imports a
``fairseq_rela`` module before fairseq must ``import fairseq_rela.models`` itself.)
"""
import sys

__version__ = "0.1.0"

if "fairseq" in sys.modules:
    from fairseq_rela import models, tasks  # noqa: E402,F401  (registration)
