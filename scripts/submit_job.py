"""The streaming job as spark-submit's application file (it takes a file, not a module).

    .venv/bin/spark-submit --master spark://127.0.0.1:7077 \\
        --jars "$(.venv/bin/python -m streaming connector-jars)" scripts/submit_job.py run

Arguments after the file are ``python -m streaming``'s; the executors' Python must have
recstream installed (here: the same .venv, which the job names through PYSPARK_PYTHON).
"""

from streaming.cli import main

if __name__ == "__main__":
    main()
