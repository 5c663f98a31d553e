"""The Gradio demo's tabs, one module each; app.py lays them out."""
