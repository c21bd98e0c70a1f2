"""Ctrl-C while training: the first one asks the Trainer to checkpoint and stop; a second one aborts."""

from __future__ import annotations

from retain.errors import RetainError


class Interrupted(RetainError):
    """Ctrl-C during training: a checkpoint was kept; exit code 130."""

    exit_code = 130


class catch_sigint:
    """While training, the first Ctrl-C asks the Trainer to checkpoint and stop; a second one aborts."""

    def __init__(self, trainer):
        self.trainer = trainer

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        if self.trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.trainer.interrupted = True

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


