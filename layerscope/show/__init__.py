"""Figures from tidy tables (matplotlib, Agg backend); no metrics are computed here."""
