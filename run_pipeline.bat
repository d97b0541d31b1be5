@echo off
rem trendflow on Windows: run the pipeline or one stage from the project venv.
rem   run_pipeline.bat                       the whole pipeline on the demo universe (= trendflow run)
rem   run_pipeline.bat run --data DIR ...    any trendflow command with its arguments
rem   run_pipeline.bat --stages trading,reporting   flags alone mean `run` with those flags
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
    "%PY%" -m pip install --quiet -c "%ROOT%\constraints.txt" -e "%ROOT%[test,dask,ibkr,data]" || exit /b 2
)
cd /d "%ROOT%"
rem Arguments go to trendflow untouched via %* (a shift loop would split --stages signal,trading and
rem --set key=value at the comma and the equals sign, which cmd treats as separators).
set "FIRST=%~1"
if /i "%FIRST%"=="test" goto test
if not exist "%ROOT%\v4_trace_outputs\logs" mkdir "%ROOT%\v4_trace_outputs\logs"
for /f "tokens=1-3 delims=/-. " %%a in ("%DATE:~-10%") do set "STAMP=%%c%%a%%b"
set "CLOCK=%TIME: =0%"
set "LOG=%ROOT%\v4_trace_outputs\logs\run_pipeline_%STAMP%_%CLOCK:~0,2%%CLOCK:~3,2%%CLOCK:~6,2%_%RANDOM%.log"
if "%FIRST%"=="" (
    "%PY%" -m flows.cli run > "%LOG%" 2>&1
) else if "%FIRST:~0,1%"=="-" (
    "%PY%" -m flows.cli run %* > "%LOG%" 2>&1
) else (
    "%PY%" -m flows.cli %* > "%LOG%" 2>&1
)
set "CODE=%ERRORLEVEL%"
type "%LOG%"
echo log: %LOG% 1>&2
exit /b %CODE%

:test
shift
set "ARGS="
:collect
if "%~1"=="" goto collected
set ARGS=%ARGS% %1
shift
goto collect
:collected
"%PY%" -m pytest %ARGS%
exit /b %ERRORLEVEL%
