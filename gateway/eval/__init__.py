"""`gateway eval`: a labelled dataset through one or more targets, scored and rendered."""
