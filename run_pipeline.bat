@echo off
rem trendflow on Windows: run the pipeline or one stage from the project venv.
rem   run_pipeline.bat                       the whole pipeline on the demo universe (= trendflow run)
rem   run_pipeline.bat run --data DIR ...    any trendflow command with its arguments
rem   run_pipeline.bat trade --out DIR       one stage
rem   run_pipeline.bat test                  the test suite
rem First use creates .venv and installs the pinned set (constraints.txt). Exit code = the command's.
setlocal EnableExtensions
set "ROOT=%~dp0"
set "ROOT=%ROOT:~0,-1%"
set "PY=%ROOT%\.venv\Scripts\python.exe"
if not defined PREFECT_HOME set "PREFECT_HOME=%ROOT%\.prefect"
set "PREFECT_SERVER_ANALYTICS_ENABLED=false"
if not defined PREFECT_LOGGING_LEVEL set "PREFECT_LOGGING_LEVEL=WARNING"
if not exist "%PY%" (
    echo setting up "%ROOT%\.venv" ^(one time^) ... 1>&2
    py -3 -m venv "%ROOT%\.venv" || python -m venv "%ROOT%\.venv" || exit /b 2
    "%PY%" -m pip install --quiet --upgrade pip || exit /b 2
    "%PY%" -m pip install --quiet -c "%ROOT%\constraints.txt" -e "%ROOT%[test,dask,ibkr]" || exit /b 2
)
cd /d "%ROOT%"
set "COMMAND=%~1"
if "%COMMAND%"=="" set "COMMAND=run"
if not "%~1"=="" shift
set "ARGS="
:collect
if "%~1"=="" goto collected
set ARGS=%ARGS% %1
shift
goto collect
:collected
if /i "%COMMAND%"=="test" (
    "%PY%" -m pytest %ARGS%
    exit /b %ERRORLEVEL%
)
if not exist "%ROOT%\v4_trace_outputs\logs" mkdir "%ROOT%\v4_trace_outputs\logs"
for /f "tokens=1-3 delims=/-. " %%a in ("%DATE:~-10%") do set "STAMP=%%c%%a%%b"
set "LOG=%ROOT%\v4_trace_outputs\logs\run_pipeline_%STAMP%_%RANDOM%.log"
"%PY%" -m flows.cli %COMMAND% %ARGS% > "%LOG%" 2>&1
set "CODE=%ERRORLEVEL%"
type "%LOG%"
echo log: %LOG% 1>&2
exit /b %CODE%
