"""PathRay's clinician app: Gradio, the slide viewer and their HTTP server (see ui.server)."""
