"""A quiet server terminal: one log line per user error (errors.readable), and the warnings that libraries raise
on every request, which say nothing about the user's input or the studio, filtered here, each with its cause."""
import logging
import sys
import warnings

log = logging.getLogger("brivl.studio")


def quiet_warnings() -> None:
    """Filter the library warnings a studio run would print on every event (causes in the comments)."""
    # gradio.utils.safe_get_lock / safe_get_stop_event make a new asyncio event loop for each lock they create while
    # Blocks and its queue are set up outside a running loop, and never close the loop they replace; nothing of
    # ours runs on those loops.
    warnings.filterwarnings("ignore", message=r"unclosed event loop", category=ResourceWarning)
    # gradio.queueing.Queue._get_df (its per-event statistics) sets pandas' 'future.no_silent_downcasting' and calls
    # infer_objects(copy=False); pandas 3 deprecates both. The studio's own tables never go through it.
    warnings.filterwarnings("ignore", message=r"'future\.no_silent_downcasting' is deprecated")
    warnings.filterwarnings("ignore", message=r"The copy keyword is deprecated")


def log_to_stderr() -> None:
    """Send the studio's log (one line per user error, a traceback per bug) to stderr, once."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("brivl studio: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
