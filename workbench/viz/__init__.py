"""Drawing predictions and ground truth on images, and plotly figures for the tabs."""
