"""`edge review`: the review queue as a local web page, answered with the keyboard.

queue.py reads what waits for a person from the journal (per camera, per burst) and says the
scores in plain words; answers.py applies an answer (journal intent, durable move out of
OUT/review, sidecar); security.py holds the token, session and CSRF checks; app.py the routes.
Nothing here imports torch or ONNX Runtime: the page runs on the device beside the watcher.
"""
