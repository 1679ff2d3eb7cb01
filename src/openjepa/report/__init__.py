"""A self-contained HTML report of what a checkpoint learned (`openjepa report`)."""

from .data import run_folder_of
from .figures import png_data_uri
from .html import CSP, ReportResult, render_html, write_report

__all__ = ["write_report", "ReportResult", "render_html", "png_data_uri", "run_folder_of", "CSP"]
