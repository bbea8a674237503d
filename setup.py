from configparser import ConfigParser
from pathlib import Path
import setuptools, shlex, shutil
from setuptools.command.build_py import build_py

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

licenses = {
    'apache2': ('Apache Software License 2.0','OSI Approved :: Apache Software License'),
    'mit': ('MIT License', 'OSI Approved :: MIT License'),
}
statuses = [ '1 - Planning', '2 - Pre-Alpha', '3 - Alpha',
    '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive' ]
py_versions = '3.10 3.11 3.12'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
min_python = cfg['min_python']
console_scripts = cfg.get('console_scripts', '').split()
package_data = dict()
pkg_data = cfg.get('package_data', None)
if pkg_data:
    package_data[cfg['lib_name']] = pkg_data.split()

# The course's data (datasets and pretrained checkpoints, ~17 MB) ships inside the wheel as `tlcourse/_data/`, so a
# normal `pip install .` can load every dataset and checkpoint without the repository. The repository keeps data/
# where it is: it is copied into the build tree only. An editable install reads the repository's data/ directly.
DATA_SOURCE = Path(__file__).resolve().parent / 'data'

def is_data_file(rel: Path) -> bool:
    "Skip hidden files (partial atomic writes are named `.<name>.*.tmp`), caches and byte-code."
    return not any(part.startswith('.') or part == '__pycache__' for part in rel.parts) and rel.suffix not in ('.pyc', '.tmp')

class build_py_with_data(build_py):
    def run(self):
        if getattr(self, 'editable_mode', False): return super().run()
        # build/ outlives builds: start the package's build tree afresh so that no stale module or data file ships
        if Path(self.build_lib).resolve() != DATA_SOURCE.parent: shutil.rmtree(Path(self.build_lib) / cfg['lib_name'], ignore_errors=True)
        super().run()
        if not (DATA_SOURCE / 'manifest.json').is_file():
            raise SystemExit(f"tlcourse: building a wheel needs the course data in {DATA_SOURCE} (its manifest.json is "
                             "missing). Build from a full checkout of the repository, or restore data/ with "
                             "`git checkout -- data`.")
        target = Path(self.build_lib) / cfg['lib_name'] / '_data'
        for src in sorted(DATA_SOURCE.rglob('*')):
            rel = src.relative_to(DATA_SOURCE)
            if src.is_file() and is_data_file(rel):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / rel)

setuptools.setup(
    cmdclass = {'build_py': build_py_with_data},
    name = cfg['lib_name'],
    license = lic[0],
    classifiers = [
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: '+o for o in py_versions[py_versions.index(min_python):]] + (['License :: ' + lic[1] ] if lic[1] else []),
    url = cfg['git_url'],
    packages = setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data = True,
    package_data = package_data,
    install_requires = requirements,
    extras_require={ 'dev': dev_requirements },
    dependency_links = cfg.get('dep_links','').split(),
    python_requires  = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': console_scripts,
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **setup_cfg)
