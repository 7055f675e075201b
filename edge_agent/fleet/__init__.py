"""Managing a box from the bureau's side: signed `config`, `model`, `logs` and `doctor` commands.

Each command arrives through the ordinary verified path (edge_agent/command_dispatch.py); what
is too large for one command travels in parts (`transfer.py`), each part signed, the whole
named by its SHA-256 in every part's signed body. A config change is validated as strictly
as `check-config --strict`, swapped in atomically beside the old file, applied by restarting
the process, and confirmed or rolled back by the new process itself (`remote_config.py`).
A model is checked like a shipped one, installed beside the current one, self-tested and
activated or rolled back (`models.py`). `logs` and `doctor` answer from the running box
(`diagnostics.py`, `logring.py`), secrets redacted (`redact.py`).
"""
