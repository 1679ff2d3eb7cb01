"""A self-contained HTML report of what a checkpoint learned (`openjepa report`)."""

from .html import CSP, ReportResult, png_data_uri, render_html, run_folder_of, write_report

__all__ = ["write_report", "ReportResult", "render_html", "png_data_uri", "run_folder_of", "CSP"]
