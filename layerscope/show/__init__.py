"""Show: figures (matplotlib, Agg backend) and the HTML report, drawn from tidy tables and result
data classes handed to them; nothing here computes a metric or a statistic.

Data enters as data frames (probe metrics, gains, regression coefficients) and leaves as PNG +
SVG files and ``report.html``. The submodules import matplotlib; import them only to draw.
"""
