"""The preprocessing worker's photo work around the generator: ``worker.PhotoWork`` prepares the
crops and finishes the answer image (``answer_image``: paste back or a face sheet, encoded)."""
