"""Common corruptions (Hendrycks & Dietterich 2019): a reference backend (``imagecorruptions``,
made to work on today's stack) and a fast batched torch backend, one file per corruption."""
