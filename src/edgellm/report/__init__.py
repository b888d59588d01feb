"""Analysis of a bench run directory: tables, percentiles, CV by context length, plots, HTML."""
