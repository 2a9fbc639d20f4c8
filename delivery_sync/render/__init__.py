"""Everything the user sees: summary lines, progress, the status view, tables, CSV and JSON.

rich is imported only where a terminal table or progress bar is drawn, so
scripts asking for CSV/JSON do not pay for it.
"""

from .lines import (
    aggregate_summary,
    collect_summary,
    interrupted_summary,
    progress_bar,
    status_check_line,
    summary,
    sync_summary,
    waiting,
)
from .prometheus import status_prometheus
from .status_view import show_status, status_json
from .tables import report

__all__ = [
    "aggregate_summary", "collect_summary", "interrupted_summary", "progress_bar", "report", "show_status", "status_check_line",
    "status_json", "status_prometheus", "summary", "sync_summary", "waiting",
]
